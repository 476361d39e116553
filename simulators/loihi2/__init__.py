"""A Loihi 2 device as Lava 0.10.0's fixed-point CPU models compute it: integer models of
Dense and LIF, a batched torch emulator, and a runner for real Lava processes (docs/loihi2.md).

"Bit-exact" here means bit-exact to lava-nc 0.10.0 ``Loihi2SimCfg(select_tag="fixed_pt")``,
not to Loihi silicon, whose process models are not public (spec B5).
"""
