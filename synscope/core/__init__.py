"""The vocabulary every stage shares: records (frames, segments, ICMP errors), TCP flag and
option definitions, ICMP error kinds, sequence arithmetic, address and number formatting,
exit codes and port lists. Imports nothing else of synscope. Compiled with mypyc."""
