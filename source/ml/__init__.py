"""Forecasting models: causal features, walk-forward evaluation, selection against the naive
forecast, and a registry that refuses model files whose checksum does not match."""
