"""Alert rules (model and condition parser) and the engine that evaluates them."""
