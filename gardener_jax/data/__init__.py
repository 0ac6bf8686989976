"""Video data: TFDS builders (array_record, no TensorFlow), VideoMAE frame sampling, grain pipelines."""
