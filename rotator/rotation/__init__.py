"""One rotation of one account: the story, the lease, the grant keeper, publishing."""
