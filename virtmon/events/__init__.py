"""Domain and connection events: decoding, the Event model, the bus, the journal and its stream."""
