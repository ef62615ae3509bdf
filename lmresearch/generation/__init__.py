"""Generation: what every sampler shares (stop strings compiled for the device; more moves here
as the CLI's sampler and the server's engine become one)."""
