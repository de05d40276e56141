"""3.3.0-compatible module paths under ``veltix_rs.network`` (``types``, ``request``,
``response``, ``sender``, ``system_types``, ``_rust``)."""
