"""The pytest plugin an adopter gets by installing the package: revokd_server and revokd_client."""

from revokd_client import Verdict


def test_the_plugin_fixtures(revokd_server, revokd_client):
    issued = revokd_client.issue_token("dave")
    assert revokd_client.verify(issued.token).verdict is Verdict.VALID
    assert "revokd serving" in revokd_server.logs()
