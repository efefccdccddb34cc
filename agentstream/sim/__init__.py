"""The Exotel call simulator: plays audio as concurrent Stream/Voicebot calls, asks Passthru,
and reads back from Kafka what the pipeline made of each call.

A client of the pipeline, the way Exotel is: it talks to ingest over WebSocket and to routing
over HTTP, and reads the result topics. It may import ``schemas`` and its own modules only
(never ``ingest``, ``analytics`` or ``routing``, so a bug shared with the server cannot hide).

``calls`` plans and plays calls, ``messages`` spells what Exotel sends, ``audio`` turns files
into PCM frames, ``results`` reads the topics back and summarises, ``settings`` holds the
``AGENTSTREAM_SIMULATOR_*`` settings. Used by ``agentstream simulate``, ``bench/e2e.py`` and the
end-to-end tests.
"""
