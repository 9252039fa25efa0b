"""A small existing Flask-SQLAlchemy app on the HRP tables, integrated with hrp-cutover.

The two lines marked `hrp-cutover` are all the integration takes (README:
"Your own Flask-SQLAlchemy app"). Served as the app's owners serve it:
    gunicorn -w 2 'tests.e2e.example_app.app:create_app()'
"""

from __future__ import annotations

import json
import os
from datetime import date

from flask import Flask, abort, jsonify, request
from sqlalchemy import func, select, text

from hrp_data.web import HrpCutover  # hrp-cutover
from tests.e2e.example_app.models import Horse, Prediction, Race, db


def create_app(test_config=None):
    app = Flask(__name__)
    app.config["SQLALCHEMY_DATABASE_URI"] = os.environ.get("DATABASE_URL", "sqlite:///hrp_database.db")
    if test_config:
        app.config.update(test_config)
    db.init_app(app)
    HrpCutover().init_app(app, db=db)  # hrp-cutover

    @app.get("/races")
    def list_races():
        races = Race.query.order_by(Race.id.desc()).limit(request.args.get("limit", 20, type=int)).all()
        return jsonify([race.to_dict() for race in races])

    @app.get("/races/<int:race_id>")
    def show_race(race_id):
        race = db.get_or_404(Race, race_id)
        body = race.to_dict()
        body["predictions"] = [p.to_dict() for p in race.predictions]
        return jsonify(body)

    @app.post("/races")
    def create_race():
        data = request.get_json()
        race = Race(
            race_name=data["race_name"],
            track_name=data.get("track_name"),
            distance=data.get("distance"),
            race_date=date.fromisoformat(data["race_date"]) if data.get("race_date") else None,
            weather_conditions=json.dumps(data["weather"]) if data.get("weather") else None,
        )
        db.session.add(race)
        db.session.commit()
        return jsonify(race.to_dict()), 201

    @app.patch("/races/<int:race_id>")
    def update_race(race_id):
        race = db.session.get(Race, race_id)
        if race is None:
            abort(404)
        race.status = request.get_json()["status"]
        db.session.commit()
        return jsonify(race.to_dict())

    @app.post("/horses")
    def create_horse():
        data = request.get_json()
        horse = Horse(horse_name=data["horse_name"], age=data.get("age"), jockey=data.get("jockey"))
        db.session.add(horse)
        db.session.commit()
        return jsonify(horse.to_dict()), 201

    @app.post("/races/<int:race_id>/predictions")
    def predict(race_id):
        data = request.get_json()
        race = db.get_or_404(Race, race_id)
        prediction = Prediction(
            race_id=race.id, horse_id=data["horse_id"], confidence=data["confidence"],
            algorithm_version="v2", features=json.dumps(data.get("features", {})),
        )
        db.session.add(prediction)
        db.session.commit()
        return jsonify(prediction.to_dict()), 201

    @app.get("/horses")
    def list_horses():
        rows = db.session.execute(select(Horse).order_by(Horse.horse_name).limit(50)).scalars()
        return jsonify([horse.to_dict() for horse in rows])

    @app.get("/reports/tracks")
    def track_report():
        rows = db.session.execute(
            text(
                "SELECT track_name, COUNT(*) AS races, AVG(distance) AS average_distance"
                " FROM races WHERE track_name IS NOT NULL GROUP BY track_name ORDER BY track_name"
            )
        ).mappings()
        return jsonify([dict(row) for row in rows])

    @app.get("/reports/years")
    def races_per_year():
        year = func.strftime("%Y", Race.race_date)  # SQLite only: PostgreSQL has no strftime
        rows = db.session.execute(
            select(year.label("year"), func.count(Race.id)).where(Race.race_date.is_not(None)).group_by(year)
        ).all()
        return jsonify({row[0]: row[1] for row in rows})

    return app
