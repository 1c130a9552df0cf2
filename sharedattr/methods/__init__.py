"""Attribution methods and the matching of driver images to references."""
