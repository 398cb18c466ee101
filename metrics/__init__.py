"""The `evaluate` metric folders, shipped with asarg as data (`asarg push-metric` copies one); not for import."""
