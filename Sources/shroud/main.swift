import ArgumentParser
import ShroudCrypto
import ShroudMedia
import ShroudStore
import ShroudWire
print("shroud")
