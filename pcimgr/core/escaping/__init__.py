"""One escaping layer per output format pcimgr writes for another program to read.

Each module takes values as they arrive (options, facts files, paths) and returns text that
its consumer reads back as exactly that value, or raises BadInput naming the value and what
the format cannot carry. Generators build their files only from these functions, so a value
never becomes syntax: a shell command, a udev key, a second YAML document.
"""
