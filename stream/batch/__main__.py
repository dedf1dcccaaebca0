"""``python -m stream.batch``: see :mod:`stream.batch.cli`."""

from stream import interrupts

interrupts.watch()  # before torch: a Ctrl-C while it imports is not lost
try:
    from stream.batch.cli import main
except KeyboardInterrupt:  # Ctrl-C during the seconds that importing torch takes
    interrupts.leave(130, "interrupted")

if __name__ == "__main__":
    interrupts.leave(main(prog="python -m stream.batch"))
