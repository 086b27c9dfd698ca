"""accelml.bitstreams: synthesis of the engine's blocks for resource estimates, the resource model
that checks each preset fits its named device, and (later) FPGA platforms and the open build flow."""
