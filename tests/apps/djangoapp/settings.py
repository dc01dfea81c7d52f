"""
The settings of the test Django site: no database, no apps, one URLconf.
"""

SECRET_KEY = "not-secret-test-only"
DEBUG = False
ALLOWED_HOSTS = ["*"]
ROOT_URLCONF = "djangoapp.views"
INSTALLED_APPS: list[str] = []
MIDDLEWARE = ["django.middleware.common.CommonMiddleware"]
DATABASES: dict[str, object] = {}
USE_TZ = True
LOGGING_CONFIG = None
DATA_UPLOAD_MAX_MEMORY_SIZE = None
