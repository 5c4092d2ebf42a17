"""Exposition: rendering metric families to Prometheus text and OpenMetrics, and serving them."""
