"""The core every other part builds on: records, errors, metrics, channels, logs, paths, the one
backoff and the show schema. It imports nothing else of dreamstate."""
