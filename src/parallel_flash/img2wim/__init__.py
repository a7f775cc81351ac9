"""img2wim: FFU -> WIM of its MainOS partition, with bindings of wimlib and NTFS-3G."""
