"""The supervisor dashboard served by routing at ``/dashboard``: live calls ranked by risk.

``board`` is the pure engine (records in, rows and call details out), ``proximity`` says how
close a call is to each rule firing, ``static/`` is the page (plain HTML, JS and CSS, SVG drawn
by hand). May import ``schemas`` only; routing's HTTP app and readers feed it.
"""
