"""`cartwatch bench`: cartwatch side by side with baselines and a peer, on one broker and run.

``contenders`` are the separate processes that consume the same pre-loaded input,
``measurements`` drives them and measures, ``report`` prints the table and writes the JSON.
"""
