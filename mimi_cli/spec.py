"""The facts of Mimi's token format that every layer shares: codec/, formats/, serve/, data/ and the
jobs import them from here (torch-free, so `mimi --help` and the readers start without torch)."""

SAMPLE_RATE = 24_000  # the codec takes and gives 24 kHz mono audio
FRAME_RATE = 12.5  # frames of codes per second: one per 80 ms
FRAME_SAMPLES = 1920  # samples of 24 kHz audio per frame
CODEBOOK_SIZE = 2048  # codes of each codebook are 0..2047
MAX_CODEBOOKS = 32  # Mimi's RVQ depth: the first codebook semantic, the rest acoustic
DEFAULT_CODEBOOKS = 8  # what Moshi uses
DEFAULT_WEIGHTS = "kyutai/mimi"  # the Hub repo the weights come from unless told otherwise
