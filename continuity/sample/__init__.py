"""A small real service for the demo fleet, so that a failover moves something that matters."""
