"""nasviz."""
