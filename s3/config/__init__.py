"""Configuration: `S3_*` settings from the environment and the engine sections of a bundle."""
