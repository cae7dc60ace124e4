"""The device data path: where frames live between decode and encode when `--device` is a
torch device. `select` resolves `--device` once; `transfer` moves frames up and down (pinned,
double-buffered, on their own CUDA streams when on a GPU); `buckets` pads batches to fixed
sizes so CUDA graphs can replay them. CUDA-only pieces sit behind `is_cuda` guards and are
plain copies or eager calls on the CPU, where the tests run the same code."""
