import ShroudRelayCore
print(RelayInfo(version: "0.1.0"))
