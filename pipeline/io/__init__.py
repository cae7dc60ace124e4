"""Media in and out: PyAV decode (`video_reader`) and encode (`video_writer`), output paths
checked before work starts (`paths`), files that appear only when complete (`atomic`,
`outputs`), the run report and boxes export (`report`), array files (`npz_file`)."""
