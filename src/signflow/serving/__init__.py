"""signflow.serving: prediction for users: the Predictor, batch prediction, ONNX export."""
