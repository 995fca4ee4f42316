"""The site's pages, one module per kind of page, each with its own `urlpatterns`:

* `dataset`: home, prompt sets, the sample explorer, releases (everyone);
* `account`: sign up, log in, profile, tokens, nodes, my samples (a contributor's own);
* `bounties`: the bounty board, a bounty's page, claims;
* `leaderboard`: the leaderboard and a contributor's credit history.

Views are thin: reads come from the packages' selectors, writes go through their services.
Every value is escaped by the template engine (autoescape is never turned off), and pages
carry no inline script (the Content-Security-Policy forbids it): behaviour lives in
thinkpool/static/thinkpool/site.js.
"""
