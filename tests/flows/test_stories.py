from flows.stories import StoryIndex, normalize, story_ids


def test_copies_differing_by_link_case_prefix_and_credit_are_one_story():
    texts = [
        "$AAPL Apple shares fall 5% after earnings miss https://t.co/abc123",
        "RT @wallstreet: $aapl Apple shares fall 5 pct after earnings miss https://t.co/zzz",
        "$AAPL  Apple shares fall 5% after earnings miss!! - Reuters",
        "Apple shares fall 5% after earnings miss, analysts say $AAPL",  # reworded: MinHash
        "Oil prices jump as OPEC cuts output",
    ]
    ids = story_ids(texts)
    assert len(set(ids[:4])) == 1 and ids[4] != ids[0]


def test_normalize_strips_noise_but_keeps_the_words():
    assert normalize("RT @a: RT @b: Fed HIKES rates &amp; more https://x.co/1 via @WSJ") == (
        "fed hikes rates more"
    )


def test_different_short_headlines_stay_apart():
    assert len(set(story_ids(["oil plunges item1", "oil plunges item2", "Fed holds rates"]))) == 3


def test_known_stories_keep_their_ids_across_runs():
    first = story_ids(["Tesla recalls 2 million cars over autopilot flaw in the US"])
    index = StoryIndex()
    index.add("Tesla recalls 2 million cars over autopilot flaw in the US", first[0])
    assert (
        index.assign("Tesla recalls 2 million cars over Autopilot flaw in the US https://t.co/q")
        == first[0]
    )
    assert (
        index.assign("Tesla recalls 2 million cars over autopilot flaw in the US, regulators say")
        == first[0]
    )
