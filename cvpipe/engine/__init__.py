"""The loops every head shares: fit, evaluate, predict."""
