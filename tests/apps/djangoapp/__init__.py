"""
A minimal Django site for the WSGI tests and bench/compare_wsgi.py: served
as C{djangoapp.wsgi.application}.
"""
