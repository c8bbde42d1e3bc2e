import NIOCore
import NIOHTTP1
import ShroudRelayCore
