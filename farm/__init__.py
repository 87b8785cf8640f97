"""The farm: specs, manifests, window engine, Serve app, media, CLI."""
