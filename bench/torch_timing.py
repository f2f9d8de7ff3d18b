"""Timing a PyTorch training step the way `cnnc bench` times cnnc's, shared by bench/zoo.py and
bench/compare_pytorch.py (imports nothing but the standard library; the caller brings torch)."""
import time


def best_training_rate(model, optimizer, loss_fn, x, y, batch, steps, repetitions, warmup):
    """Images/s of the best of `repetitions` runs of `steps` training steps at `batch` examples
    (optimizer.zero_grad, forward, loss_fn, backward, optimizer.step), after `warmup` steps;
    step s trains on the batch starting at (s * batch) % (len(x) - batch)."""
    def run(count):
        for s in range(count):
            i = (s * batch) % (len(x) - batch)
            optimizer.zero_grad(set_to_none=True)
            loss_fn(model(x[i:i + batch]), y[i:i + batch]).backward()
            optimizer.step()

    run(warmup)
    best = 0.0
    for _ in range(repetitions):
        start = time.perf_counter()
        run(steps)
        best = max(best, steps * batch / (time.perf_counter() - start))
    return best
