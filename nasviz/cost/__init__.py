"""Cost of a subnet: FLOPs/params (``nasviz.profile``) and latency measured on the device
(:mod:`nasviz.cost.latency`)."""
