
import os as _os

# ragas posts usage analytics unless told not to; ragft's default path makes no outbound calls.
_os.environ.setdefault("RAGAS_DO_NOT_TRACK", "true")
