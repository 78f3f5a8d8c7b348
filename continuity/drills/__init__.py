"""Chaos drills: scenarios, targets, faults, probes, rollbacks, load, measurement, runner."""
