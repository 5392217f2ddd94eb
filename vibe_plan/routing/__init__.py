"""profile-routing and import-routing: expert loads from a model's routers or an engine dump."""
