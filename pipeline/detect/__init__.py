"""Face detection: frames → `Detections` (boxes, scores, 5 landmarks) in frame pixels."""
