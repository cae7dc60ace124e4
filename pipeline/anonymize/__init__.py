"""Anonymize stage: every face is swapped to its fake identity (`swap`: alignment → SimSwap →
`paste_back`, optional `noise_defense`) or covered (`cover`: blur, pixelate, mask). Where the
pixel work runs is a `face_ops` backend: OpenCV on host images, or torch on a device
(`torch_faces`)."""
