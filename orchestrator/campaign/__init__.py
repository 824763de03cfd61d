"""The campaign: the loop as a small state machine over the ledger.

`campaign.CampaignLoop` proposes (`proposing`, an agent editing the campaign's git worktree: `worktree`), measures
(`measuring`, through the executor it is handed), judges (`judge`, the keep rule as a function over measurements,
with `judging` its implementation for a campaign and `policy` its numbers) and records (`record`); `facts` are the
pure facts over a campaign's runs (champion, noise, next seeds, allowance); `parallel` runs K candidates at once over
one loop; `sibling` merges a keep of the other program on the same tag.
"""
