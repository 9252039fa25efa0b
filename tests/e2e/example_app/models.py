"""The HRP app's own models, declared the way a Flask-SQLAlchemy app declares them."""

from __future__ import annotations

from datetime import datetime, timezone

from flask_sqlalchemy import SQLAlchemy

db = SQLAlchemy()


def utcnow() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


class Race(db.Model):
    __tablename__ = "races"

    id = db.Column(db.Integer, primary_key=True)
    race_name = db.Column(db.String(200), nullable=False)
    race_date = db.Column(db.Date)
    track_name = db.Column(db.String(100))
    race_type = db.Column(db.String(50))
    distance = db.Column(db.Float)
    surface = db.Column(db.String(50))
    prize_money = db.Column(db.Float)
    weather_conditions = db.Column(db.Text)  # JSON text
    status = db.Column(db.String(20), default="scheduled")
    created_at = db.Column(db.DateTime, default=utcnow)
    updated_at = db.Column(db.DateTime, default=utcnow, onupdate=utcnow)

    predictions = db.relationship("Prediction", backref="race", lazy=True)

    def to_dict(self):
        return {
            "id": self.id,
            "race_name": self.race_name,
            "race_date": self.race_date.isoformat() if self.race_date else None,
            "track_name": self.track_name,
            "distance": self.distance,
            "weather_conditions": self.weather_conditions,
            "status": self.status,
            "created_at": self.created_at.isoformat() if self.created_at else None,
        }


class Horse(db.Model):
    __tablename__ = "horses"

    id = db.Column(db.Integer, primary_key=True)
    horse_name = db.Column(db.String(100), nullable=False)
    age = db.Column(db.Integer)
    weight = db.Column(db.Float)
    jockey = db.Column(db.String(100))
    trainer = db.Column(db.String(100))
    owner = db.Column(db.String(100))
    form = db.Column(db.String(50))
    created_at = db.Column(db.DateTime, default=utcnow)
    updated_at = db.Column(db.DateTime, default=utcnow, onupdate=utcnow)

    def to_dict(self):
        return {"id": self.id, "horse_name": self.horse_name, "age": self.age, "jockey": self.jockey}


class Prediction(db.Model):
    __tablename__ = "predictions"

    id = db.Column(db.Integer, primary_key=True)
    race_id = db.Column(db.Integer, db.ForeignKey("races.id"))
    horse_id = db.Column(db.Integer, db.ForeignKey("horses.id"))
    user_id = db.Column(db.Integer)
    prediction_value = db.Column(db.Float)
    confidence = db.Column(db.Float)
    algorithm_version = db.Column(db.String(50))
    features = db.Column(db.Text)  # JSON text
    created_at = db.Column(db.DateTime, default=utcnow)

    horse = db.relationship("Horse")

    def to_dict(self):
        return {
            "id": self.id,
            "race_id": self.race_id,
            "horse_id": self.horse_id,
            "confidence": self.confidence,
            "features": self.features,
            "created_at": self.created_at.isoformat() if self.created_at else None,
        }
