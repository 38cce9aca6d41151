"""What one run is: the chain of steps (chain, steps), their conditions, the platform client
and its transport with retries, and the run's result records."""
