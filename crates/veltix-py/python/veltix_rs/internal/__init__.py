"""3.3.0-compatible module paths (``veltix_rs.internal.events``)."""
