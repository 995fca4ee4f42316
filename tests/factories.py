from __future__ import annotations

import uuid

import factory
from django.contrib.auth import get_user_model

from contributors.models import ComputeNode, Profile
from scoring.models import Domain, Prompt, PromptGold, PromptSet
from scoring.services import messages_hash


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = get_user_model()
        django_get_or_create = ("username",)
        skip_postgeneration_save = True

    username = factory.Sequence(lambda n: f"user{n}")

    @factory.post_generation
    def profile(obj, create, extracted, **kwargs):  # type: ignore[no-untyped-def]
        if create:
            Profile.objects.get_or_create(user=obj, defaults={"handle": obj.username})


class PromptSetFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = PromptSet

    name = factory.Sequence(lambda n: f"set-{n}")
    domain = Domain.MATH
    license = "MIT"
    temperatures = factory.LazyFunction(lambda: [0.6])
    samples_per_prompt = 2


class PromptFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Prompt
        skip_postgeneration_save = True

    prompt_set = factory.SubFactory(PromptSetFactory)
    external_id = factory.Sequence(lambda n: f"p{n}")
    messages = factory.Sequence(lambda n: [{"role": "user", "content": f"What is {n} + {n}?"}])
    text_hash = factory.LazyAttribute(lambda o: messages_hash(o.messages))

    @factory.post_generation
    def gold(obj, create, extracted, **kwargs):  # type: ignore[no-untyped-def]
        if create:
            PromptGold.objects.create(prompt=obj, answer=extracted or "SECRET-GOLD-42")


class NodeFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = ComputeNode

    owner = factory.SubFactory(UserFactory)
    name = factory.Sequence(lambda n: f"node-{n}")
    backend = "openai"
    models_served = factory.LazyFunction(lambda: [{"id": "org/model-a", "revision": None}])


def sample_payload(item: int, *, temperature: float = 0.6, **overrides: object) -> dict:
    payload = {
        "client_id": str(uuid.uuid4()),
        "item": item,
        "completion": "<think>2+2 is 4</think> The answer is \\boxed{4}.",
        "reasoning": None,
        "model": "org/model-a",
        "model_revision": "abc123",
        "sampling": {"temperature": temperature, "top_p": 0.95, "max_tokens": 512, "n": 1},
        "finish_reason": "stop",
        "prompt_tokens": 12,
        "completion_tokens": 20,
        "generation_ms": 150,
    }
    payload.update(overrides)
    return payload
