"""The process runtime every speechjobs process shares: lifecycle, probes, health, metrics and logs."""
