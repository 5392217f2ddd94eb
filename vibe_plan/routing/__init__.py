"""profile-routing and import-routing: record expert loads from a model's routers or an engine dump."""
