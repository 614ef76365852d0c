"""Media plane: forwards encoded RTP between peers without decoding it.

Imports point one way: nothing here imports rooms, sessions or `telemed` (LiveKit `pkg/sfu`).
"""

from .config import IceConfig, SfuConfig
from .plane import MediaPlane
from .publisher import PublishPeer
from .subscriber import SubscribePeer
from .subscription import Subscription
from .track import Track

__all__ = ["IceConfig", "MediaPlane", "PublishPeer", "SfuConfig", "SubscribePeer",
           "Subscription", "Track"]
