import sys
from pathlib import Path

# the references live beside the tests as a plain module
sys.path.insert(0, str(Path(__file__).parent))
