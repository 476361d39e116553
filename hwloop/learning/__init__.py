"""Networks and learners: BPTT (autograd reference), HYPR, e-prop, streaming HYPR."""
