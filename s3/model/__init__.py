"""The L2 model's tools: export of scikit-learn models to ONNX, `s3 model explain`, and
`s3 model train` (labels from the replay's outcome simulation). Needs the ``model`` extras."""
