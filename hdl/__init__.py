"""accelml.hdl: EngineConfig, the ISA definition and the Amaranth engine."""
