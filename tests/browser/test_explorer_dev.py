import pytest
from tests.browser.test_explorer import run_explorer_checks

@pytest.mark.browser
def test_dev(open_notebook):
    nb = open_notebook("/tmp/devnb/explorer_dev.ipynb", viewport=(1400, 1000))
    nb.run_all_and_wait(timeout=240)
    run_explorer_checks(nb)
