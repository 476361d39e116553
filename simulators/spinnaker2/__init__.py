"""A SpiNNaker 2 chip as hwloop models it: processing elements (PEs) with 128 KiB of SRAM each,
an allocator that places every region of a mapped network and refuses what does not fit, and a
mapper that splits a network over PEs (docs/spinnaker2.md).
"""
